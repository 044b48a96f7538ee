"""Adapters for other frameworks (the top floor, beside cli and serve): they import the package;
the package never imports them. Each needs its framework, installed as an optional extra."""
