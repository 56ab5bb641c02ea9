"""Every module that registers checks; importing this module fills the registry.

Add one line per module.  An import error here is a bug and must be loud.
"""
