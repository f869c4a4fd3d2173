"""The store: the connection to ClickHouse (embedded or a server), the schema, and the catalogue (catalog.py),
whose parts hold every statement that changes a table."""
