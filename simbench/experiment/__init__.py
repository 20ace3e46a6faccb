"""simbench.experiment"""
