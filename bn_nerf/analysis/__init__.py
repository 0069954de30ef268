"""Analyses of coordinate networks: empirical NTK spectra, width-scaling fits, the spectral-bias demo."""
