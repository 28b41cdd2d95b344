"""Online serving, the prediction log and batch scoring."""
