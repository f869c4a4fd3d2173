"""The store: the connection to ClickHouse (embedded or a server), the schema and the statements on its tables."""
