"""Search: a query parsed and checked, planned, written as one ranking statement, run and logged.

In reading order: filters.py (the operator table, the only place an operator is spelled; filters as people
write them), values.py (column types; values read from text), where.py (filters bound to the table's columns:
a `Where`), options.py (the page, score cut, order and facets, with their limits), query.py (`Query`: every
input checked once), tuning.py (the measured constants; `index_fetch`), statement.py (`Strategy`, the plan;
`search_sql`, `facet_sql`, `count_sql`), signals.py (ranking signals, pictures and words, fused in one
statement), searcher.py (`Searcher`: check, encode, plan, rank), log.py
(search_log rows)."""
