"""The results branch: writing it (`store`), reading it (`read`), the site pages a change
makes (`publish`) and the whole site built from it (`build`).
"""
