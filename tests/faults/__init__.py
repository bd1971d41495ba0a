"""Fault injection: real processes under nemeses, checked against a recorded history."""
