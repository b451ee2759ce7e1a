"""posguard's dashboard: the account at a glance, in a browser (docs/dashboard.md).

`posguard web` (and `posguard dev`) serves it. One job a module:
- `models`: what the JSON API answers (Decimal inside, strings on the wire);
- `store_reads`: the rows it reads from PostgreSQL (closed positions, alerts, waves,
  reconcile findings, one position's events);
- `marks`: the mark prices it samples itself and keeps, bounded, in memory;
- `data`: the account read from the workflows (the `state` query) and the store;
- `chart`: a position's price, stop and entry over time, for the chart;
- `actions`: close and trail, only behind `web_actions` and `web_token`;
- `app`: the HTTP routes; `server`: the process (refresh loop and serving);
- `static/`: the page, and the vendored chart library (static/vendor/README.md).

Read-only unless `web_actions` and `web_token` are both set. The page loads only its
own files: nothing is fetched from elsewhere at run time.
"""
