"""simbench.report"""
