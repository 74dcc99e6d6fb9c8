"""The before/after report: load the runs' records, compare, render Markdown, HTML and JSON."""
