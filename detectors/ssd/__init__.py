"""The SSD family: one head, prior generator, matcher, loss and post-processing; variants differ in
features."""
