"""Evaluation harness: replays corpus curves through the online analyzer."""
