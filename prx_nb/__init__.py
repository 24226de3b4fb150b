"""The PRX text-to-image speedrun recipe as a literate, executable repository"""

__version__ = "0.0.1"
