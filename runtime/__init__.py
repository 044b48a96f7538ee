"""KeyframeFace Runtime: text in, 60 fps ARKit face frames out, streaming.

Data flow, one package per stage: generate (text -> model tokens) -> keyframes (tokens ->
keyframes) -> animate (keyframes -> timeline -> in-betweens) -> clock (60 fps deadlines) -> sinks.
"""
