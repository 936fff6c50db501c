"""What every AutoScorer service shares: contracts, errors, settings and seams."""
