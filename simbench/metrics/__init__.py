"""simbench.metrics"""
