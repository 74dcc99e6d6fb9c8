"""The command line: one parser, lazy dispatch to each command's function."""
