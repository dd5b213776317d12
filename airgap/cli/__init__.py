"""The command line: parses options, calls the library, prints. Only this package imports click and tqdm."""
