"""simbench.learn"""
