"""The few sentences tiny test tokenizers and datasets are built from."""

SENTENCES = [
    "the movie was wonderful and the acting was great",
    "a dull film with a terrible plot and bad acting",
    "i loved every minute of this charming story",
    "the worst movie i have seen in years",
    "an excellent cast makes this a delightful comedy",
    "boring slow and far too long",
    "happy people tell good stories about good days",
    "sad news came on a grey and rainy day",
]
