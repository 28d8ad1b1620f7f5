# pip needs a setup.py or pyproject.toml to install a project; everything else lives in setup.cfg.
from setuptools import setup

setup()
