"""Tests of the pure analysis package and its evaluation harness."""
