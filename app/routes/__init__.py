"""Thin HTTP handlers: parse, call one function, return."""
