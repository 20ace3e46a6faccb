"""simbench.real"""
