"""Sources beyond sysfs. Each probe (a `recording.Probe`) reads live hardware only on the
live root and otherwise replays the recording stored in the root at
`.nodeagent/probes/<name>.json`; `registry.PROBES` lists them all.
"""
