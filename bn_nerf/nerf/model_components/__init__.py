"""What turns rays into samples and renders into figures, as nerfstudio's model_components: the
occupancy grid that samples rays (sampling.py), the contraction of space beyond the scene box that
the grid and the fields share (contraction.py), image metrics that need no internet (metrics.py), and
the warning a run that is not learning its scene gets (health.py)."""
