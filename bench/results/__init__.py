"""Results: the records store, the tables, statistics, reports, plots and comparisons made from it."""
