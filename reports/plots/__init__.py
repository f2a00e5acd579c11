"""Report figures, one module per figure family; every function draws from a loaded run and saves a PNG."""

import matplotlib

matplotlib.use("Agg")  # files only: reports are built on headless machines and in tests
