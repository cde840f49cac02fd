"""What embedpipe remembers between runs: the SQLite ledger (`ledger`), its schema as numbered
migrations (`migrations`), and the file permissions of what a run writes (`permissions`)."""
