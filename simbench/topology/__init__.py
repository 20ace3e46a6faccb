"""simbench.topology"""
