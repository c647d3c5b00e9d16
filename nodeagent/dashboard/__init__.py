"""`nodeagent admin dashboard`: a read-only web view of the fleet, served on the admin's own
machine and fed by the inventory's gRPC API with the admin's certificate (as `kubectl proxy`
does), so the inventory gains no listener and no new kind of credential.

`source` holds the one connection and the cached fleet, `pages` and `fabric_svg` render,
`server` answers HTTP; nothing here imports the inventory's or the agent's code.
"""
