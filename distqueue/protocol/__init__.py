"""The wire protocol: RESP framing (resp.py) and the JSON shapes of jobs (messages.py)."""

#: the protocol version HELLO speaks
PROTOCOL_VERSION = 1
