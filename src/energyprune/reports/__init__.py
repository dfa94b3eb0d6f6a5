"""Tables, Markdown and plots for people."""
