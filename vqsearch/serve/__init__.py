"""`vqsearch serve`: the JSON API of contract.md's HTTP section and the search page, over one loaded engine.

  app.py      the FastAPI application: routes, errors as {"error": ..}, the token, the page
  index.py    the served index: store, model and QueryEngine loaded once, one query at a time
  jobs.py     index jobs in a background thread (queued, running, done, failed) with progress
  frames.py   a video's frame n as a JPEG, its box drawn when asked
  limits.py   what a request may carry: body size, the bearer token, the address to bind
  static/     the page (plain HTML, CSS and JS; nothing fetched from outside)
"""
