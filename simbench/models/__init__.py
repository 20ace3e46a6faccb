"""simbench.models"""
