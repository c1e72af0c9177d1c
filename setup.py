"""Everything about the package is in pyproject.toml; this file lets tools that still call setup.py
(`python setup.py develop`, old pip) build it too."""

from setuptools import setup

setup()
