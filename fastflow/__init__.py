"""Fast-Flow: a git-native pipeline runner configured entirely by files."""
__version__ = "0.1.0"
