"""Search: a query parsed and checked, planned, written as one ranking statement, run and logged."""
