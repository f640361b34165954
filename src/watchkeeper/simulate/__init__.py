"""`watchkeeper simulate`: real trouble, made safely, to see what watchkeeper does about it."""
