"""Suite files (``bench/suites/*.toml``) read into typed settings: schema, bases, overrides, variants."""
