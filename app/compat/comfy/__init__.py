"""ComfyUI's own API under /comfy (and its websocket at /ws): the passthrough.

proxy (the routes, and relaying ComfyUI's answers), ws (the websocket), rules (what
COMFY_PASSTHROUGH=true forwards), request (a request made ready to go on), parse (the path,
query and file names, read once as ComfyUI reads them), submit (POST /prompt), upload (the
uploads), reads (what a key reads: its own prompts and files), owners (whose each prompt id and
client id is) and state (the passthrough's memory on app.state).
"""
