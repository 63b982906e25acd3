"""The operator page, `/console`: what this gateway is doing, for a person to watch.

A static page and its script (app/console/static/, served from the package: no CDN, no build
step) over the JSON of `GET /console/state.json` (app.console.state: read from memory, at most
once a second) and the job event streams that exist already; thumbnails of finished jobs'
images (app.console.thumbnails). Its routes are app.console.routes. It sits beside the facades:
it reads the gateway (app.gateway: the job backend, the pool, the model store) and the routes'
dependencies, and nothing imports it but app.main.
"""
