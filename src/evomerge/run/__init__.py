"""The search loop, its run store (resumable) and its report."""
