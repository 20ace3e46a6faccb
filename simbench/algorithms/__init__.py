"""simbench.algorithms"""
