"""The command line, the HTTP API and the web page: thin layers over the `clipsearch` library."""
