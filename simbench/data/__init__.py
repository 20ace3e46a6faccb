"""simbench.data"""
