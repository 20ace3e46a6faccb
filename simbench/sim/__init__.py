"""simbench.sim"""
