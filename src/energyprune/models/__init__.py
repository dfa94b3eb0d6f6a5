"""Models: architectures, the zoo (specs, safe weight loading) and layer helpers."""
