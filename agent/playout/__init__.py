"""Playout: carries out the arbiter's decisions as audio leaving the sound card."""
