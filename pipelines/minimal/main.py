print("The smallest pipeline: just a main.py, every setting at its default.")
