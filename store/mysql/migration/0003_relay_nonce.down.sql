SET @omnibox_migrate = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = {{.DatabaseLiteral}} AND TABLE_NAME = {{.RelaysTableLiteral}} AND COLUMN_NAME = 'nonce') = 1,
    'ALTER TABLE {{.RelaysTable}} DROP COLUMN nonce',
    'DO 0');
PREPARE omnibox_migrate FROM @omnibox_migrate;
EXECUTE omnibox_migrate;
DEALLOCATE PREPARE omnibox_migrate;
SET @omnibox_migrate = NULL;
