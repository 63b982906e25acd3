"""Thin HTTP handlers: parse, call the gateway's door, answer. app.routes.respond answers a job.

Imports: app.gateway and the layers below; never the edge or the facades.
"""
