"""Feature extractors ("necks" on the VGG16 body): the only part in which SSD variants differ."""
