"""`vqsearch serve`: the JSON API of contract.md's HTTP section and the search page, over one loaded engine.

  app.py      the FastAPI application: routes, the token, the page, the docs; `vqsearch serve` itself
  errors.py   every error as {"error": "<one line>"} with its status
  index.py    the served index: store, model and QueryEngine loaded once, one query at a time
  jobs.py     index jobs in a background thread (queued, running, done, failed) with progress
  frames.py   a video's frame n as a JPEG, its box drawn when asked
  limits.py   what a request may carry: body size, the bearer token, the address to bind
  spawn.py    a real server in a child process, for the browser test and the benchmark
  static/     the page (plain HTML, CSS and JS; nothing fetched from outside)
"""
