"""simbench.core"""
